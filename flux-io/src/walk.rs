//! [`WalkPath`]: where a burn module walk (`ModuleVisitor`, `ModuleMapper`) is.

/// The field names from the walk's root to the parameter being visited, and the container
/// type each field was entered from (`Struct:Linear` for a `Linear`'s `weight`). Enum
/// variants (resident or offloaded blocks) add no segment: they are how a model holds its
/// weights, not where checkpoints and LoRA files name them.
#[derive(Debug, Clone, Default)]
pub(crate) struct WalkPath {
    names: Vec<String>,
    containers: Vec<String>,
}

impl WalkPath {
    /// A walk of a part of a model whose path in the whole is `prefix`.
    pub fn at(prefix: &[&str]) -> Self {
        Self {
            names: prefix.iter().map(|s| s.to_string()).collect(),
            containers: vec![String::new(); prefix.len()],
        }
    }

    /// Call from `enter_module`.
    pub fn enter(&mut self, name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.names.push(name.to_string());
            self.containers.push(container_type.to_string());
        }
    }

    /// Call from `exit_module`.
    pub fn exit(&mut self, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.names.pop();
            self.containers.pop();
        }
    }

    /// The field being visited (`weight`).
    pub fn field(&self) -> &str {
        self.names.last().map_or("", String::as_str)
    }

    /// The container type the field belongs to (`Struct:Linear`).
    pub fn container(&self) -> &str {
        self.containers.last().map_or("", String::as_str)
    }

    /// Whether any enclosing field belongs to a container of type `container`.
    pub fn inside(&self, container: &str) -> bool {
        self.containers.iter().any(|c| c == container)
    }

    /// The path `levels` above the field, joined with `.` (0: the field's own path).
    pub fn up(&self, levels: usize) -> String {
        self.names[..self.names.len().saturating_sub(levels)].join(".")
    }
}
