//! One error type for every crate of Lumen: bad input is an error that says what
//! went wrong and, where it can, what the valid choices are.

use std::path::PathBuf;

/// Everything that can go wrong when explaining a model.
#[derive(Debug, thiserror::Error)]
pub enum LumenError {
    /// A device string that names no known backend.
    #[error(
        "unknown device `{spec}`: expected one of cpu, wgpu, wgpu:N, tch:cpu, tch:cuda:N, cuda:N, ndarray"
    )]
    UnknownDevice { spec: String },

    /// A device whose backend was not compiled into this build.
    #[error(
        "device `{spec}` needs the `{feature}` backend, which this build does not include: rebuild with `--features {feature}`"
    )]
    BackendNotCompiled { spec: String, feature: &'static str },

    /// A device whose backend is compiled in but which this machine does not have
    /// (no such GPU, no driver).
    #[error("device `{spec}` is not available on this machine: {reason}")]
    DeviceUnavailable { spec: String, reason: String },

    /// A layer name the model does not expose.
    #[error("unknown layer `{name}`; valid layers: {}", layer_list(valid))]
    UnknownLayer { name: String, valid: Vec<String> },

    /// A layer exists but has the wrong kind for the requested operation.
    #[error("layer `{name}` is {found}, but {expected} is needed here")]
    WrongLayerKind {
        name: String,
        expected: &'static str,
        found: String,
    },

    /// A method name that no registry knows.
    #[error("unknown method `{name}`; valid methods: {}", valid.join(", "))]
    UnknownMethod { name: String, valid: Vec<String> },

    /// A named choice (baseline, colormap, head fusion, ...) outside its valid set.
    #[error("unknown {what} `{name}`; valid {what}s: {}", valid.join(", "))]
    UnknownChoice {
        what: &'static str,
        name: String,
        valid: Vec<&'static str>,
    },

    /// A model architecture name that the zoo does not know.
    #[error("unknown model `{name}`; valid models: {}", valid.join(", "))]
    UnknownModel { name: String, valid: Vec<String> },

    /// A tensor or image whose shape does not fit.
    #[error("wrong shape for {what}: expected {expected}, found {found}")]
    Shape {
        what: String,
        expected: String,
        found: String,
    },

    /// A class index outside the model's output.
    #[error(
        "class index {class} is out of range: the model has {num_classes} classes (0..{num_classes})"
    )]
    ClassOutOfRange { class: usize, num_classes: usize },

    /// An image file that could not be read or decoded.
    #[error("cannot read image `{}`: {message}", path.display())]
    Image { path: PathBuf, message: String },

    /// A weight file that could not be read, or whose tensors do not fit the model.
    #[error("cannot load weights from `{}`: {message}", path.display())]
    Weights { path: PathBuf, message: String },

    /// Any other invalid argument, with a message that says what to change.
    #[error("{0}")]
    InvalidArgument(String),

    /// The explanation of these images holds NaN or infinite values: the model's
    /// output or its gradients overflowed, and a figure of it would be blank.
    #[error(
        "the explanation of {} is NaN or infinite (the model's output or its gradients overflowed): nothing was drawn for it",
        images.join(", ")
    )]
    NonFinite { images: Vec<String> },

    /// No input of a run gave a result: each was unreadable or explained as NaN or
    /// infinite. `reasons` names each with why.
    #[error("no input could be used ({count} given): {reasons}")]
    NoUsableInput { count: usize, reasons: String },

    /// The device could not run the work or hand its result back: it ran out of
    /// memory, refused a buffer this large, or was lost. `message` is the backend's
    /// cause; `hint` says what to change where the cause is memory.
    #[error("the device failed: {message}{hint}")]
    Device { message: String, hint: &'static str },

    /// Plain I/O failure on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`LumenError`].
pub type Result<T, E = LumenError> = std::result::Result<T, E>;

/// Layer names for a message: the points inside numbered blocks (`layer3.1.conv2`,
/// `blocks.4.mlp.fc1`) are given once as the names each block has, since a ResNet-50
/// has 16 blocks of 9 to 10 of them; every other name as it is.
fn layer_list(valid: &[String]) -> String {
    let mut outer: Vec<&str> = vec![];
    let mut inner: Vec<&str> = vec![];
    let mut example = None;
    for name in valid {
        match point_inside_block(name, valid) {
            Some(sub) => {
                example.get_or_insert(name.as_str());
                if !inner.contains(&sub) {
                    inner.push(sub);
                }
            }
            None => outer.push(name),
        }
    }
    match example {
        None => outer.join(", "),
        Some(example) => format!(
            "{}; and inside each block (as `{example}`): {} (`lumen layers` lists every name)",
            outer.join(", "),
            inner.join(", ")
        ),
    }
}

/// The name of `name`'s point inside the first block of `valid` (a listed `prefix.N`)
/// that holds it: `mlp.fc1` of `blocks.4.mlp.fc1`.
fn point_inside_block<'a>(name: &'a str, valid: &[String]) -> Option<&'a str> {
    name.match_indices('.').find_map(|(dot, _)| {
        let (parent, sub) = (&name[..dot], &name[dot + 1..]);
        let numbered = parent
            .rsplit('.')
            .next()
            .is_some_and(|last| last.parse::<usize>().is_ok());
        let is_block = numbered && valid.iter().any(|v| v == parent);
        (is_block && sub.parse::<usize>().is_err()).then_some(sub)
    })
}

impl LumenError {
    /// Shorthand for a name outside a fixed set of choices.
    pub fn unknown_choice(what: &'static str, name: &str, valid: &[&'static str]) -> Self {
        Self::UnknownChoice {
            what,
            name: name.to_string(),
            valid: valid.to_vec(),
        }
    }

    /// A backend's execution error as [`LumenError::Device`]: its chain of causes on
    /// one line (without the backtrace lines cubecl adds), and the memory knob when
    /// the cause is an allocation.
    pub fn device(cause: impl std::fmt::Display) -> Self {
        let text = cause.to_string();
        // burn wraps cubecl's chain as `Execution(...)`, whose closing parenthesis
        // ends the backtrace line dropped below.
        let chain = text.strip_prefix("Execution(").unwrap_or(&text);
        let message = chain
            .lines()
            .map(str::trim)
            .filter(|line| {
                !line.is_empty()
                    && !line.starts_with("Caused by")
                    && !line.starts_with("Asked at")
                    && !line.to_ascii_lowercase().contains("backtrace")
            })
            .collect::<Vec<_>>()
            .join("; ");
        let lower = text.to_ascii_lowercase();
        let hint = if lower.contains("alloc") || lower.contains("memory") {
            ". Give fewer rows per internal batch (the methods' internal batch size; the \
             CLI's --internal-batch-size) or fewer or smaller images"
        } else {
            ""
        };
        Self::Device { message, hint }
    }

    /// Shorthand for a shape mismatch.
    pub fn shape(what: impl Into<String>, expected: impl ToString, found: impl ToString) -> Self {
        Self::Shape {
            what: what.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_failure_is_one_line_with_the_memory_hint_when_it_is_memory() {
        // The shape of cubecl's execution error on lavapipe (a 192 MiB buffer).
        let cubecl = "Execution(An error happened during execution\nCaused by:\n  Several \
                      failures at once\nCaused by:\n  An IO error happened\nCaused by:\n  \
                      can't allocate buffer of size: 201326592\nNo backtrace available\nAsked \
                      at:\nNo backtrace available)";
        let message = LumenError::device(cubecl).to_string();
        assert_eq!(
            message.lines().count(),
            1,
            "one line, no backtrace: {message}"
        );
        assert!(
            message.contains("can't allocate buffer of size: 201326592"),
            "{message}"
        );
        assert!(!message.contains("backtrace"), "{message}");
        assert!(
            message.starts_with("the device failed: An error happened during execution; "),
            "{message}"
        );
        assert!(message.contains("--internal-batch-size"), "{message}");
        let lost = LumenError::device("the GPU was lost").to_string();
        assert_eq!(lost, "the device failed: the GPU was lost");
    }

    #[test]
    fn an_unknown_layer_lists_the_points_inside_blocks_once() {
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let valid = names(&[
            "conv1",
            "layer1.0.conv1",
            "layer1.0.act1",
            "layer1.0",
            "layer1.1.conv1",
            "layer1.1.act1",
            "layer1.1.downsample",
            "layer1.1",
            "layer1",
            "fc",
        ]);
        let message = LumenError::UnknownLayer {
            name: "layer9".into(),
            valid,
        }
        .to_string();
        assert_eq!(
            message,
            "unknown layer `layer9`; valid layers: conv1, layer1.0, layer1.1, layer1, fc; and \
             inside each block (as `layer1.0.conv1`): conv1, act1, downsample (`lumen layers` \
             lists every name)"
        );
        // Points nested inside a block's module (a ViT's `mlp.fc1`) are named from the block.
        let valid = names(&[
            "patch_embed",
            "blocks.0.norm1",
            "blocks.0.mlp.fc1",
            "blocks.0",
            "blocks.1.norm1",
            "blocks.1.mlp.fc1",
            "blocks.1",
            "head",
        ]);
        let message = LumenError::UnknownLayer {
            name: "blocks.9".into(),
            valid,
        }
        .to_string();
        assert_eq!(
            message,
            "unknown layer `blocks.9`; valid layers: patch_embed, blocks.0, blocks.1, head; and \
             inside each block (as `blocks.0.norm1`): norm1, mlp.fc1 (`lumen layers` lists \
             every name)"
        );
        // Without blocks (or with a dotted name under no listed block), the plain list.
        let valid = names(&["conv1", "features", "head.fc"]);
        let message = LumenError::UnknownLayer {
            name: "x".into(),
            valid,
        }
        .to_string();
        assert_eq!(
            message,
            "unknown layer `x`; valid layers: conv1, features, head.fc"
        );
    }
}
