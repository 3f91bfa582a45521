"""The routes, one `APIRouter` per resource (FastAPI's "bigger applications" layout), each
included by `app.create_app` under `API` (the page's router at the root): `identify`, `species`,
`images`, `feedback`, `health`, `page`."""

API = "/api/v1"
