"""Shared health documents (DMP) published and read over IHE MHD: the metadata vocabularies of the
CI-SIS (:mod:`carnet.documents.valuesets`) and the reading of CDA R2 headers
(:mod:`carnet.documents.cda`)."""
