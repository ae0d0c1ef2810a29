"""HTTP routes, one module per resource; every handler declares ``opt={"permission": ...}``."""
