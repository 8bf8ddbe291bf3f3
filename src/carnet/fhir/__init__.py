"""Transport-agnostic FHIR R4 engine: store, search, bundles, validation, capability statement."""
