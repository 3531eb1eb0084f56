// Package deploy holds tidemark's deployment manifests and their tests.
//
// The manifests themselves live where their tools look for them
// (docker-compose.yml and Dockerfile at the repository root); the tests here
// load them the way those tools do and check the promises the docs make about
// them: which services run, how many replicas, the start order, where each
// role finds Redis and Postgres, and that no secret is written inline.
// httpcheck is the container healthcheck binary the runtime image ships.
package deploy
