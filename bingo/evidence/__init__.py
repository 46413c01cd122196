"""Evidence into scores: the named estimators (``estimators``), the candidate rankings
they choose between (``candidates``), exact measurement of candidate masks on the kept
examples (``meter``) and the calibrated estimator built on it (``calibrated``)."""
