"""Carnet: a self-hostable personal health space built on a FHIR R4 engine."""

__version__ = "0.1.0"
