// Package deploy holds tidemark's deployment manifests and their tests.
//
// docker-compose.yml and Dockerfile live at the repository root, where their
// tools look for them; the Kubernetes manifests live in k8s/ (a kustomize
// base, autoscaling components and a demo overlay; docs/deploy.md). The
// tests here load them the way those tools do — the compose-spec loader,
// kustomize in-process — and check the promises the docs make about them:
// which services run, how many replicas, the start order, where each role
// finds Redis and Postgres, probes on served paths, grace periods, security
// contexts, autoscaling on existing queues, and that no secret is written
// inline. httpcheck is the container healthcheck binary the runtime image
// ships.
package deploy
