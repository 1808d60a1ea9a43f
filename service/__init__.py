"""The service layer: graywave's use cases as plain functions, with no Prefect and no HTTP.

- ``backends``: the blob store, the lake and MongoDB opened from the settings; recording and forgetting.
- ``batch``: one batch of uploads processed (read, decode, histogram, encode, write).
- ``wave``: a wave planned, its batches run by a ``BatchRunner``, every row recorded once.
- ``daily``: the daily questions (user histograms, median, similar users, a user's week) and
  the recording of their results.
- ``images``: what the API shows of each upload, and the API's writes (upload, reprocess, delete).
- ``tokens``: the API's bearer tokens.
- ``samples``: photo-like sample images (demo, tests, benchmarks).

``flows`` (Prefect), ``api`` (HTTP) and ``cli`` call these; these call ``kernels`` and ``storage``.
"""
