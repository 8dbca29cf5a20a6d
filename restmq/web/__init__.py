"""The HTTP layer: Cyclone handlers, thin (parse -> store/dispatcher -> render)."""
