//! Explanation quality metrics for Lumen: faithfulness, sensitivity, localization, sanity checks.
//!
//! Not built yet. Depends on `lumen-core` (and `lumen-methods` for re-explaining), never on plotting.
