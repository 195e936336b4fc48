//! `lumen layers`: a model's named layers and their kinds.

use clap::Args;
use lumen::{ExplainableModel, Result, TaskModel};
use serde::Serialize;

use crate::args::{JsonOutput, ModelArgs, with_any_model};

#[derive(Args, Debug)]
pub struct LayersArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// `--json` prints the layers as JSON; `--quiet` is accepted like every command's
    /// (this one prints nothing else on stderr), so that scripts can pass it throughout.
    #[command(flatten)]
    print: crate::args::PrintArgs,
}

#[derive(Serialize)]
struct LayerRow {
    name: String,
    kind: String,
    default: bool,
    /// Theoretical receptive field side and jump in input pixels (CNN layers).
    receptive_field: Option<usize>,
    jump: Option<usize>,
}

/// Every layer of `model` with its kind and theoretical receptive field.
fn layer_rows(model: &impl ExplainableModel) -> Vec<LayerRow> {
    let default = model.default_layer();
    let fields = lumen::features::theoretical_receptive_fields(model);
    model
        .layers()
        .into_iter()
        .map(|l| {
            let field = fields.iter().find(|f| f.layer == l.name);
            LayerRow {
                default: l.name == default,
                receptive_field: field.map(|f| f.size),
                jump: field.map(|f| f.jump),
                name: l.name,
                kind: l.kind.to_string(),
            }
        })
        .collect()
}

pub fn run(args: LayersArgs) -> Result<()> {
    // Layer names do not depend on weights: random ones when none are given.
    let (name, rows) = with_any_model!(args.model.architecture_any()?, |model| (
        model.name().to_string(),
        layer_rows(model.model())
    ));
    if args.print.json {
        JsonOutput {
            command: "layers",
            model: &name,
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: &rows,
            files: vec![],
        }
        .print();
    } else {
        // The names in one column: the points inside blocks run longer than 24.
        let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(24);
        for row in rows {
            let mark = if row.default { "  (default)" } else { "" };
            let field = match (row.receptive_field, row.jump) {
                (Some(size), Some(jump)) => format!("  receptive field {size} px, jump {jump}"),
                _ => String::new(),
            };
            println!("{:<width$} {}{field}{mark}", row.name, row.kind);
        }
    }
    Ok(())
}
