"""HTTP routes, one small module per resource; each endpoint only translates between HTTP and core calls."""
