//! The operator's plane: the admin console (database `pglease`, [`console`]).

pub mod console;
