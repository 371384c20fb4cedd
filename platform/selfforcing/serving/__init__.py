"""Ray Serve application: OpenAI-compatible video jobs and live streams from autoregressive generators.

Layout: ``validation`` (request -> spec), ``jobs`` (job store), ``encoders`` (ndjson / mjpeg / fMP4),
``runner`` (generator and text-encoder runners), ``sessions`` (stream and job consumption),
``batch_loop`` (one chunk-batching loop per generator replica), ``live`` (the WebSocket session protocol),
``model_source`` (registry / checkpoint / preset) are plain Python; ``live_backend``, ``deployments``,
``ingress`` (and the page in ``static/``) and ``app`` (the typed builder ``build_app`` that ``serve/config.yaml`` imports) are the Serve edge.
"""
