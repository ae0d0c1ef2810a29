"""Request and response bodies (msgspec structs), validated at the edge before any service call."""
