"""Ray Serve application: OpenAI-compatible video jobs and live streams from autoregressive generators.

Layout. Plain Python: ``jsonsafe`` (bounded JSON), ``httputil`` (bounded bodies, auth), ``schemas`` and
``validation`` (request -> ``GenerationSpec``), ``errors`` (OpenAI's envelope, safe echoes), ``messages``
(typed messages between deployments), ``admission`` (the one admission decision per replica: rows,
waiting slots, sessions, K/V memory), ``batch_loop`` (one chunk-batching loop per generator replica),
``jobs`` (job store), ``encoders`` (ndjson / mjpeg / fMP4), ``runner`` (generator and text-encoder runners),
``sessions`` (stream and job consumption), ``live`` + ``live_messages`` (the WebSocket session protocol
and its message catalogue), ``model_source`` (registry / checkpoint / preset; the MLflow store set up
once). The Serve edge: ``guard`` (request ids, generic 500s, close frames), ``live_backend``,
``deployments``, ``ingress`` (and the page in ``static/``) and ``app`` (the typed builder ``build_app`` that
``serve/config.yaml`` imports).
"""
