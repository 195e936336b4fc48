//! Named choices (baselines, head fusions, integration rules, ...): one macro gives an
//! enum its names, `FromStr` (errors list the valid names), `Display` and the list of
//! names for `--help`, so that options are parsed once at the edge.

/// Implement `NAMES`, `name()`, `FromStr` and `Display` for a fieldless `Copy` enum:
/// `named_choices!(HeadFusion, "head fusion", { Mean => "mean", Max => "max" });`
#[macro_export]
macro_rules! named_choices {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every valid name, in order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// This choice's name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::LumenError;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    other => Err($crate::LumenError::unknown_choice($what, other, Self::NAMES)),
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fruit {
        Apple,
        Pear,
    }
    named_choices!(Fruit, "fruit", { Apple => "apple", Pear => "pear" });

    #[test]
    fn names_round_trip_and_errors_list_the_choices() {
        assert_eq!("pear".parse::<Fruit>().unwrap(), Fruit::Pear);
        assert_eq!(Fruit::Apple.to_string(), "apple");
        let error = "plum".parse::<Fruit>().unwrap_err().to_string();
        assert_eq!(error, "unknown fruit `plum`; valid fruits: apple, pear");
    }
}
