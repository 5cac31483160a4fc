"""The values that flow between the steps (resolved sources, desired image, observed state,
plan, states), and the pure builders over them. Imports only `reconciler.oci`, the spec and
`reconciler.errors`: no I/O library."""
