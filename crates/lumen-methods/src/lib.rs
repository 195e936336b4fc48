//! Attribution methods for Lumen: the CAM family, gradient and path methods, noise wrappers and attention methods, all batched.
//!
//! Depends on `lumen-core` and `burn` only, so that a user with their own Burn model can depend on this crate alone: no model zoo, plotting or GPU backend is pulled in.
