//! Kinds that list themselves. [`labelled!`] declares an enum of label-only
//! variants together with `ALL` (every variant, in order) and `as_str` (its
//! label), from one list: a variant added to the enum is in `ALL` and has a
//! label, so nothing that iterates `ALL` (the metrics) can forget it. The
//! label is also how it is written (`Display`, serde) and read back (serde:
//! exactly; `from_label`: in any case).

/// `labelled! { /// doc  pub enum Name { Variant => "label", ... } }`
#[macro_export]
macro_rules! labelled {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident => $label:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name {
            $( $(#[$variant_meta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label in metrics and `/status`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }

            /// The value labelled `label`, in any ASCII case.
            #[allow(dead_code)]
            pub fn from_label(label: &str) -> Option<$name> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str().eq_ignore_ascii_case(label))
            }
        }

        /// Read back from its label, exactly (a configuration value).
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                const LABELS: &[&str] = &[$($label),+];
                struct Label;
                impl serde::de::Visitor<'_> for Label {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "one of {}", LABELS.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        $name::ALL
                            .iter()
                            .copied()
                            .find(|value| value.as_str() == text)
                            .ok_or_else(|| E::unknown_variant(text, LABELS))
                    }
                }
                deserializer.deserialize_str(Label)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::labelled! {
        enum Colour {
            Red => "red",
            Green => "green",
        }
    }

    #[test]
    fn every_value_is_listed_with_its_label() {
        let labels: Vec<&str> = Colour::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels, ["red", "green"]);
        assert_eq!(Colour::Green.to_string(), "green");
        assert_eq!(Colour::from_label("RED"), Some(Colour::Red));
        assert_eq!(Colour::from_label("blue"), None);
        let read: Colour = serde_yaml::from_str("green").expect("a label");
        assert_eq!(read, Colour::Green);
        let err = serde_yaml::from_str::<Colour>("Green").expect_err("exact");
        assert!(
            err.to_string().contains("expected `red` or `green`"),
            "{err}"
        );
    }
}
