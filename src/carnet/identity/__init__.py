"""National health identity (INS): the matricule, the identity status (RNIV), the INSi teleservice
and identity matching. Pure logic: no storage, no HTTP."""
