//! Random identifiers, below every subsystem that mints them (graph ids,
//! snapshot names, echo sync ids).

/// A random UUID v4: graph ids, snapshot names, sync ids.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}
