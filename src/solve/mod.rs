//! Solvers for the codes: FISTA on the whole energy ([`fista`]) and the exact active-set solver
//! of the non-negative lasso ([`lasso`]).

pub mod fista;
pub mod lasso;
