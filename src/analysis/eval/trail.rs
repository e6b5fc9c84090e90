//! [`Trail`]: the evaluator's append-only record of one branch (its conditions and its path),
//! shared between the branches that fork from it.
//!
//! Every undecidable condition forks the packet state; with `Vec`s each fork copied every
//! condition and step so far (a kube-proxy `-m statistic` cascade copied thousands of rule
//! references per service). A trail is a persistent list: a fork shares everything before the
//! fork point and a push allocates one node, so cloning a state costs O(1) whatever its history.

use std::rc::Rc;

/// A persistent, append-only list: clones share their common prefix.
#[derive(Debug)]
pub struct Trail<T> {
    head: Option<Rc<Node<T>>>,
}

#[derive(Debug)]
struct Node<T> {
    item: T,
    prev: Option<Rc<Node<T>>>,
}

impl<T> Clone for Trail<T> {
    fn clone(&self) -> Self {
        Trail {
            head: self.head.clone(),
        }
    }
}

impl<T> Default for Trail<T> {
    fn default() -> Self {
        Trail { head: None }
    }
}

impl<T> Trail<T> {
    pub fn push(&mut self, item: T) {
        let prev = self.head.take();
        self.head = Some(Rc::new(Node { item, prev }));
    }

    /// Newest first.
    pub fn iter_rev(&self) -> impl Iterator<Item = &T> {
        let mut cur = self.head.as_deref();
        std::iter::from_fn(move || {
            let n = cur?;
            cur = n.prev.as_deref();
            Some(&n.item)
        })
    }
}

impl<T: Clone> Trail<T> {
    /// Oldest first, as the branch took them.
    pub fn to_vec(&self) -> Vec<T> {
        let mut v: Vec<T> = self.iter_rev().cloned().collect();
        v.reverse();
        v
    }
}

impl<T> Drop for Trail<T> {
    /// Iterative: a long trail dropped recursively would overflow the stack.
    fn drop(&mut self) {
        let mut cur = self.head.take();
        while let Some(rc) = cur {
            match Rc::try_unwrap(rc) {
                Ok(mut node) => cur = node.prev.take(),
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Trail;

    #[test]
    fn forks_share_the_prefix_and_keep_their_own_order() {
        let mut a = Trail::default();
        a.push(1);
        a.push(2);
        let mut b = a.clone();
        a.push(3);
        b.push(4);
        assert_eq!(a.to_vec(), vec![1, 2, 3]);
        assert_eq!(b.to_vec(), vec![1, 2, 4]);
        assert_eq!(b.iter_rev().copied().collect::<Vec<_>>(), vec![4, 2, 1]);
        assert_eq!(Trail::<u8>::default().iter_rev().count(), 0);
    }

    #[test]
    fn a_million_steps_drop_without_recursion() {
        let mut t = Trail::default();
        for i in 0..1_000_000u32 {
            t.push(i);
        }
        let keep = t.clone();
        drop(t);
        assert_eq!(keep.iter_rev().next(), Some(&999_999));
    }
}
