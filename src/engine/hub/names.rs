//! [`Names`]: the names one connection registered, in registration order.
//!
//! Most pages register exactly one name, so one is held inline; the
//! strings are the hub's name index's own (`Arc<str>`), so a name that
//! ten thousand pages share is stored once.

use std::sync::Arc;

/// A connection's names: none, one held inline, or several in a list.
#[derive(Debug, Default)]
pub(super) enum Names {
    #[default]
    None,
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl Names {
    /// The names, first registered first.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, Arc<str>> {
        match self {
            Names::None => [].iter(),
            Names::One(name) => std::slice::from_ref(name).iter(),
            Names::Many(names) => names.iter(),
        }
    }

    /// How many there are.
    pub(super) fn len(&self) -> usize {
        self.iter().len()
    }

    /// Whether the connection registered no name.
    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Names::None)
    }

    /// Adds `name` after the others (the caller checks it is new).
    pub(super) fn push(&mut self, name: Arc<str>) {
        *self = match std::mem::take(self) {
            Names::None => Names::One(name),
            Names::One(first) => Names::Many(vec![first, name]),
            Names::Many(mut names) => {
                names.push(name);
                Names::Many(names)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_order_and_one_needs_no_list() {
        let mut names = Names::default();
        assert_eq!(names.len(), 0);
        names.push("a".into());
        assert!(matches!(names, Names::One(_)));
        names.push("b".into());
        names.push("c".into());
        assert_eq!(names.len(), 3);
        let all: Vec<&str> = names.iter().map(|n| &**n).collect();
        assert_eq!(all, ["a", "b", "c"]);
        // Inline, beside the connection in the table: no larger than a Vec.
        assert_eq!(
            std::mem::size_of::<Names>(),
            std::mem::size_of::<Vec<Arc<str>>>()
        );
    }
}
