//! Embedded CPython (work in progress).
