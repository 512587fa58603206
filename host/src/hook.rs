//! The plugin hooks, declared once. Each line of [`for_each_hook!`] is one hook: its name
//! (config keys, the admin API, metrics), its WIT world, and its export interface in the
//! bindings. The macro hands the list to another macro that generates what differs per
//! hook: [`Hook`] here, a compiled component's export indices (`plugin::runtime`), a warm
//! instance's guest (`plugin::instance`). A new hook is one line here, its WIT, its call
//! (`plugin::instance` and `plugin::hooks`) and the SDK.

/// Calls `$then!` with every hook: `Variant: "name", world "wit-world", exports module;`.
macro_rules! for_each_hook {
    ($then:ident) => {
        $then! {
            Auth: "auth", world "authenticator", exports auth;
            Transform: "transform", world "transformer", exports transform;
            Route: "route", world "router", exports route;
        }
    };
}
pub(crate) use for_each_hook;

macro_rules! hook_enum {
    ($($hook:ident: $name:literal, world $world:literal, exports $exports:ident;)*) => {
        /// A plugin hook.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        // Each name is its variant's in snake case (`the_names_are_the_serialized_ones`);
        // utoipa does not read a `rename` that a macro fragment carries.
        #[serde(rename_all = "snake_case")]
        pub enum Hook {
            $($hook,)*
        }

        impl Hook {
            pub(crate) const ALL: [Hook; [$($name),*].len()] = [$(Hook::$hook),*];

            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(Hook::$hook => $name,)*
                }
            }

            /// The WIT world a component exporting this hook targets.
            pub(crate) fn world(self) -> &'static str {
                match self {
                    $(Hook::$hook => $world,)*
                }
            }
        }
    };
}

for_each_hook!(hook_enum);

impl Hook {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_the_serialized_ones() {
        for hook in Hook::ALL {
            assert_eq!(serde_json::to_value(hook).unwrap(), hook.as_str());
            assert_eq!(Hook::parse(hook.as_str()), Some(hook));
        }
    }
}
