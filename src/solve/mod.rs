//! Solvers for the codes: FISTA on the whole energy ([`fista`]), the exact active-set solver of
//! the lasso ([`lasso`]), and [`encode`], which picks the exact one wherever it applies.

pub mod encode;
pub mod fista;
pub mod lasso;
