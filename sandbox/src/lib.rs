//! twilio-sandbox: a local cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler
//! and a kwok node) for trying twilio-operator and for its end-to-end tests, the sandbox's demo,
//! and pod-level checks of Deployment rollouts; the operator's OCI image, assembled here as the
//! Dockerfile lays it out.

pub mod cluster;
pub mod demo;
pub mod image;
pub mod rollout;
