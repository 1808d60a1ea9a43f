"""The names that Prefect knows graywave's background jobs by, defined once for the flows that make
them (``flows.schedule``, ``flows.reprocess``) and the runner that starts and reads them
(``flows.jobs``, ``flows.job_runs``). No Prefect import: the API's app imports this when it is built.
"""

from __future__ import annotations

REPROCESS_JOB = "graywave-reprocess/reprocess"
"""The Prefect deployment (``flow name/deployment name``) that reprocesses many images in the
background: ``graywave serve`` registers and runs it, the API starts runs of it by this name."""
REPROCESS_FAILURES_ARTIFACT = "reprocess-failures"
"""The key of the table artifact in which a reprocessing job lists the images it could not reprocess
(``NotReprocessed`` rows), which the API reads back."""
