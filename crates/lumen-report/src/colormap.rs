//! Colormaps with matplotlib's values: viridis, plasma, inferno and magma from
//! `colorous` (the same 256-entry tables), turbo from Google's table, jet, hot and
//! gray from matplotlib's piecewise-linear definitions, and a diverging red-blue
//! (`colorous`) for signed attributions.
//! Values are looked up like matplotlib's 256-entry colormaps (`floor(t * 256)`,
//! clamped), so a value maps to the same colour as in matplotlib.

/// A colormap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Colormap {
    /// Perceptually uniform, the default.
    #[default]
    Viridis,
    /// Perceptually uniform.
    Plasma,
    /// Perceptually uniform.
    Inferno,
    /// Perceptually uniform.
    Magma,
    /// Rainbow (pytorch-grad-cam's default through OpenCV).
    Jet,
    /// Improved rainbow.
    Turbo,
    /// Black-red-yellow-white.
    Hot,
    /// Grayscale.
    Gray,
    /// Diverging blue (0) - white (0.5) - red (1), for signed maps.
    RedBlue,
}

impl Colormap {
    /// Names accepted by [`Colormap::from_name`].
    pub const NAMES: [&'static str; 9] = [
        "viridis", "plasma", "inferno", "magma", "jet", "turbo", "hot", "gray", "rdbu",
    ];

    /// Parse a name; the error lists the valid ones.
    pub fn from_name(name: &str) -> Result<Self, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "viridis" => Self::Viridis,
            "plasma" => Self::Plasma,
            "inferno" => Self::Inferno,
            "magma" => Self::Magma,
            "jet" => Self::Jet,
            "turbo" => Self::Turbo,
            "hot" => Self::Hot,
            "gray" | "grey" => Self::Gray,
            "rdbu" | "redblue" | "seismic" => Self::RedBlue,
            other => {
                return Err(format!(
                    "unknown colormap `{other}`; valid colormaps: {}",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }

    /// This colormap's name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Every colormap, in the order of [`Colormap::NAMES`].
    pub const ALL: [Self; 9] = [
        Self::Viridis,
        Self::Plasma,
        Self::Inferno,
        Self::Magma,
        Self::Jet,
        Self::Turbo,
        Self::Hot,
        Self::Gray,
        Self::RedBlue,
    ];

    /// The colour of `t` in `[0, 1]` (values outside are clamped; NaN maps to 0).
    pub fn rgb(self, t: f32) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        // matplotlib: lut index floor(t * N) clamped to N - 1, entry i at i / (N - 1).
        let index = ((t * 256.0) as usize).min(255);
        // Every pixel of every figure comes through here: the 256 entries are made
        // once (colorous evaluates a spline per call).
        static TABLES: std::sync::OnceLock<[[[u8; 3]; 256]; 9]> = std::sync::OnceLock::new();
        TABLES.get_or_init(|| Self::ALL.map(|c| std::array::from_fn(|i| c.entry(i))))[self as usize]
            [index]
    }

    /// Entry `index` of the 256-entry table, at `index / 255`.
    fn entry(self, index: usize) -> [u8; 3] {
        let x = index as f64 / 255.0;
        let from_scheme = |g: colorous::Gradient| {
            let c = g.eval_continuous(x);
            [c.r, c.g, c.b]
        };
        match self {
            Self::Viridis => from_scheme(colorous::VIRIDIS),
            Self::Plasma => from_scheme(colorous::PLASMA),
            Self::Inferno => from_scheme(colorous::INFERNO),
            Self::Magma => from_scheme(colorous::MAGMA),
            Self::Turbo => crate::turbo::TURBO[index],
            // colorous runs red to blue; negative (low) values should be blue.
            Self::RedBlue => {
                let c = colorous::RED_BLUE.eval_continuous(1.0 - x);
                [c.r, c.g, c.b]
            }
            Self::Jet => segments(x, JET),
            Self::Hot => segments(x, HOT),
            Self::Gray => {
                let v = (x * 255.0).round() as u8;
                [v, v, v]
            }
        }
    }
}

type Segments = [&'static [(f64, f64)]; 3];

/// matplotlib `_jet_data`.
const JET: Segments = [
    &[
        (0.0, 0.0),
        (0.35, 0.0),
        (0.66, 1.0),
        (0.89, 1.0),
        (1.0, 0.5),
    ],
    &[
        (0.0, 0.0),
        (0.125, 0.0),
        (0.375, 1.0),
        (0.64, 1.0),
        (0.91, 0.0),
        (1.0, 0.0),
    ],
    &[
        (0.0, 0.5),
        (0.11, 1.0),
        (0.34, 1.0),
        (0.65, 0.0),
        (1.0, 0.0),
    ],
];

/// matplotlib `_hot_data`.
const HOT: Segments = [
    &[(0.0, 0.0416), (0.365079, 1.0), (1.0, 1.0)],
    &[(0.0, 0.0), (0.365079, 0.0), (0.746032, 1.0), (1.0, 1.0)],
    &[(0.0, 0.0), (0.746032, 0.0), (1.0, 1.0)],
];

fn segments(x: f64, data: Segments) -> [u8; 3] {
    data.map(|points| {
        let v = points
            .windows(2)
            .find(|w| x <= w[1].0)
            .map(|w| {
                let (x0, y0) = w[0];
                let (x1, y1) = w[1];
                if x1 > x0 {
                    y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                } else {
                    y1
                }
            })
            .unwrap_or(points[points.len() - 1].1);
        (v * 255.0).round().clamp(0.0, 255.0) as u8
    })
}

impl std::str::FromStr for Colormap {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::from_name(name)
    }
}

impl std::fmt::Display for Colormap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_colormap_is_listed_in_the_order_of_its_name() {
        for (i, colormap) in Colormap::ALL.into_iter().enumerate() {
            assert_eq!(colormap as usize, i);
            assert_eq!(Colormap::from_name(Colormap::NAMES[i]), Ok(colormap));
        }
    }

    /// Every entry of every colormap named after matplotlib's, against matplotlib's own
    /// 256-entry tables (tools/reference/colormap_fixtures.py), within the fixture's
    /// tolerance (1 level; gray exact).
    #[test]
    fn colormaps_match_matplotlibs_tables() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/matplotlib_colormaps.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut checked = 0;
        for colormap in Colormap::ALL {
            let Some(table) = fixture["tables"][colormap.name()].as_array() else {
                continue;
            };
            let tolerance = fixture["tolerance"][colormap.name()].as_i64().unwrap();
            assert_eq!(table.len(), 256, "{colormap:?}");
            for (i, want) in table.iter().enumerate() {
                // The middle of entry i's interval: `floor(t * 256)` picks it.
                let got = colormap.rgb((i as f32 + 0.5) / 256.0);
                for c in 0..3 {
                    let want = want[c].as_i64().unwrap();
                    assert!(
                        (got[c] as i64 - want).abs() <= tolerance,
                        "{colormap:?} entry {i}: {got:?} against matplotlib {}",
                        table[i]
                    );
                }
            }
            checked += 1;
        }
        assert_eq!(
            checked, 8,
            "every colormap but RedBlue has a matplotlib table"
        );
    }

    #[test]
    fn diverging_map_is_blue_white_red() {
        let [r, _, b] = Colormap::RedBlue.rgb(0.0);
        assert!(b > r, "negative end is blue");
        let [r, _, b] = Colormap::RedBlue.rgb(1.0);
        assert!(r > b, "positive end is red");
        let mid = Colormap::RedBlue.rgb(0.5);
        assert!(mid.iter().all(|&c| c > 230), "{mid:?}");
    }

    #[test]
    fn out_of_range_and_nan_are_clamped_and_names_parse() {
        assert_eq!(Colormap::Jet.rgb(-3.0), Colormap::Jet.rgb(0.0));
        assert_eq!(Colormap::Jet.rgb(7.0), Colormap::Jet.rgb(1.0));
        assert_eq!(Colormap::Hot.rgb(f32::NAN), Colormap::Hot.rgb(0.0));
        assert_eq!(Colormap::from_name("Viridis"), Ok(Colormap::Viridis));
        let err = Colormap::from_name("rainbow").unwrap_err();
        assert!(err.contains("turbo"), "{err}");
    }
}
