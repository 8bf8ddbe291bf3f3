"""Structural validation of FHIR R4 resources (JSON form) against the base specification.

``validate(resource)`` returns a list of :class:`carnet.errors.Issue`; any issue of severity
``error`` or ``fatal`` means the resource must be rejected. Profiles named in ``meta.profile``,
terminology services and references outside the resource (or its bundle) are not consulted.
"""

from carnet.fhir.validation.validator import validate

__all__ = ["validate"]
