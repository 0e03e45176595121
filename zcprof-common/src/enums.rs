//! `named_enum!`: an enum whose variants carry the name users see, declared in one list.

/// Declares a `#[repr]` enum with discriminants `0..`, its `ALL` variants in order, `COUNT`,
/// `from_index` and `name`, from one list of `Variant = "name"`.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $name {
            /// Every variant, in discriminant order.
            pub const ALL: [$name; [$($name::$variant),*].len()] = [$($name::$variant),*];
            /// Number of variants.
            pub const COUNT: usize = Self::ALL.len();

            /// The variant with discriminant `v`.
            pub fn from_index(v: usize) -> Option<Self> {
                Self::ALL.get(v).copied()
            }

            /// Name in tables, JSON and metric labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                }
            }
        }
    };
}
pub(crate) use named_enum;
