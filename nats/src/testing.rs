//! Test helpers (feature `testing`): a NATS namespace of a test's own. (A fresh database comes
//! from `marquee-test-support`.)

/// A namespace no other test shares.
pub fn fresh_namespace() -> crate::Namespace {
    let id = uuid::Uuid::new_v4().simple().to_string();
    crate::Namespace::new(&format!("mqt{}", &id[..12])).expect("valid namespace")
}
