"""Directory of health professionals and organisations: national identifiers (RPPS, ADELI, FINESS,
SIREN, SIRET, PS_IdNat) and profession codes."""
