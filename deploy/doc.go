// Package deploy holds no code: it is the home of the deployment files
// (k8s/, grafana/, compose/, healthcheck/) and of the test that checks them,
// together with the Dockerfile and docker-compose.yml at the repository root,
// against the product: configuration variables, images, metric names and
// binaries. See the README's deployment section.
package deploy
