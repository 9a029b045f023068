"""`ikd serve`: a translation API over HTTP (LibreTranslate's /translate and ikd's own /v1/...) and a web page,
with concurrent requests batched into one search. FastAPI and uvicorn are an optional extra (`ikd[serve]`);
only `ikd.serve.app` and the command import them."""
