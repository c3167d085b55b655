//! Typed parameter sets: the decoder's ([`DecoderParams`]) and the encoder's ([`ListaParams`]),
//! by name, with what is shaped like them (gradients, Adam's moments, host copies).
//!
//! The names are defined once, here ([`DecoderParams::names`], [`ListaParams::NAMES`]); the
//! optimiser (weight decay by name), the checkpoint (`decoder_W1.npy`, ...) and the training
//! step's messages read them through [`ParamSet`].

use crate::error::{Error, Result};
use crate::model::decoder::DecoderKind;

/// A fixed set of named values: a model part's parameters, or anything shaped like them.
///
/// Two sets of the same structure list the same names in the same order, which is how the
/// optimiser pairs a parameter with its gradient and moments.
pub trait ParamSet<T> {
    /// `(name, value)` in storage order.
    fn named(&self) -> Vec<(&'static str, &T)>;
    /// `(name, value)` in storage order, mutable.
    fn named_mut(&mut self) -> Vec<(&'static str, &mut T)>;
}

/// A decoder's parameters (or anything shaped like them).
#[derive(Clone, Debug, PartialEq)]
pub enum DecoderParams<T> {
    /// The dictionary `W` `(d, l)`, atoms as columns.
    Linear {
        /// `W` `(d, l)`.
        w: T,
    },
    /// `W2 relu(W1 z + b1)`.
    OneHidden {
        /// `W1` `(m, l)`.
        w1: T,
        /// `b1` `(1, m)` on a backend (a vector of length `m` in files).
        b1: T,
        /// `W2` `(d, m)`.
        w2: T,
    },
}

impl<T> DecoderParams<T> {
    /// The parameters that are vectors (a bias): stored `(1, m)` on a backend, `(m,)` in files.
    pub const VECTORS: [&'static str; 1] = ["b1"];

    /// The names of a kind's parameters in storage order: `["W"]` or `["W1", "b1", "W2"]`.
    pub fn names(kind: DecoderKind) -> &'static [&'static str] {
        match kind {
            DecoderKind::Linear => &["W"],
            DecoderKind::OneHidden { .. } => &["W1", "b1", "W2"],
        }
    }

    /// Builds a set of `kind`'s structure, calling `f` with each name in storage order.
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn try_build(
        kind: DecoderKind,
        mut f: impl FnMut(&'static str) -> Result<T>,
    ) -> Result<Self> {
        let mut values = Vec::with_capacity(3);
        for name in Self::names(kind) {
            values.push(f(name)?);
        }
        Self::from_values(kind, values)
    }

    fn from_values(kind: DecoderKind, values: Vec<T>) -> Result<Self> {
        let n = values.len();
        let mut it = values.into_iter();
        let next = |it: &mut std::vec::IntoIter<T>| {
            it.next().ok_or_else(|| {
                Error::shape(
                    "decoder parameters",
                    format!(
                        "{kind:?} takes {} parameters, got {n}",
                        Self::names(kind).len()
                    ),
                )
            })
        };
        Ok(match kind {
            DecoderKind::Linear => DecoderParams::Linear { w: next(&mut it)? },
            DecoderKind::OneHidden { .. } => DecoderParams::OneHidden {
                w1: next(&mut it)?,
                b1: next(&mut it)?,
                w2: next(&mut it)?,
            },
        })
    }

    /// The same structure with `f` applied to every value, in storage order.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> DecoderParams<U> {
        match self {
            DecoderParams::Linear { w } => DecoderParams::Linear { w: f(w) },
            DecoderParams::OneHidden { w1, b1, w2 } => DecoderParams::OneHidden {
                w1: f(w1),
                b1: f(b1),
                w2: f(w2),
            },
        }
    }

    /// [`DecoderParams::map`] with a fallible `f`.
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn try_map<U>(&self, mut f: impl FnMut(&T) -> Result<U>) -> Result<DecoderParams<U>> {
        Ok(match self {
            DecoderParams::Linear { w } => DecoderParams::Linear { w: f(w)? },
            DecoderParams::OneHidden { w1, b1, w2 } => DecoderParams::OneHidden {
                w1: f(w1)?,
                b1: f(b1)?,
                w2: f(w2)?,
            },
        })
    }

    /// Whether this is the one-hidden-layer structure.
    pub fn is_one_hidden(&self) -> bool {
        matches!(self, DecoderParams::OneHidden { .. })
    }
}

impl<T> ParamSet<T> for DecoderParams<T> {
    fn named(&self) -> Vec<(&'static str, &T)> {
        match self {
            DecoderParams::Linear { w } => vec![("W", w)],
            DecoderParams::OneHidden { w1, b1, w2 } => vec![("W1", w1), ("b1", b1), ("W2", w2)],
        }
    }

    fn named_mut(&mut self) -> Vec<(&'static str, &mut T)> {
        match self {
            DecoderParams::Linear { w } => vec![("W", w)],
            DecoderParams::OneHidden { w1, b1, w2 } => vec![("W1", w1), ("b1", b1), ("W2", w2)],
        }
    }
}

/// The LISTA encoder's parameters (or anything shaped like them).
#[derive(Clone, Debug, PartialEq)]
pub struct ListaParams<T> {
    /// `U` `(l, d)`.
    pub u: T,
    /// `b` `(1, l)` on a backend (a vector of length `l` in files).
    pub b: T,
    /// `S` `(l, l)`.
    pub s: T,
}

impl<T> ListaParams<T> {
    /// The names in storage order.
    pub const NAMES: [&'static str; 3] = ["U", "b", "S"];

    /// The parameters that are vectors (a bias): stored `(1, l)` on a backend, `(l,)` in files.
    pub const VECTORS: [&'static str; 1] = ["b"];

    /// Builds a set, calling `f` with each name in storage order.
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn try_build(mut f: impl FnMut(&'static str) -> Result<T>) -> Result<Self> {
        let [u, b, s] = Self::NAMES;
        Ok(ListaParams {
            u: f(u)?,
            b: f(b)?,
            s: f(s)?,
        })
    }

    /// The same structure with `f` applied to every value, in storage order.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> ListaParams<U> {
        ListaParams {
            u: f(&self.u),
            b: f(&self.b),
            s: f(&self.s),
        }
    }

    /// [`ListaParams::map`] with a fallible `f`.
    ///
    /// # Errors
    /// The first error of `f`.
    pub fn try_map<U>(&self, mut f: impl FnMut(&T) -> Result<U>) -> Result<ListaParams<U>> {
        Ok(ListaParams {
            u: f(&self.u)?,
            b: f(&self.b)?,
            s: f(&self.s)?,
        })
    }
}

impl<T> ParamSet<T> for ListaParams<T> {
    fn named(&self) -> Vec<(&'static str, &T)> {
        let [u, b, s] = Self::NAMES;
        vec![(u, &self.u), (b, &self.b), (s, &self.s)]
    }

    fn named_mut(&mut self) -> Vec<(&'static str, &mut T)> {
        let [u, b, s] = Self::NAMES;
        vec![(u, &mut self.u), (b, &mut self.b), (s, &mut self.s)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_once_and_built_in_order() {
        let kind = DecoderKind::OneHidden { hidden: 4 };
        let p = DecoderParams::try_build(kind, |n| Ok(n.to_string())).unwrap();
        let named: Vec<_> = p.named().into_iter().map(|(n, v)| (n, v.clone())).collect();
        assert_eq!(
            named,
            [
                ("W1", "W1".into()),
                ("b1", "b1".into()),
                ("W2", "W2".into())
            ]
        );
        assert_eq!(
            DecoderParams::<()>::names(kind),
            &named.iter().map(|x| x.0).collect::<Vec<_>>()[..]
        );
        let lin = DecoderParams::try_build(DecoderKind::Linear, |n| Ok(n.len())).unwrap();
        assert_eq!(lin, DecoderParams::Linear { w: 1 });
        let e = ListaParams::try_build(Ok).unwrap();
        assert_eq!(
            e.named().iter().map(|x| *x.1).collect::<Vec<_>>(),
            ListaParams::<()>::NAMES
        );
    }
}
