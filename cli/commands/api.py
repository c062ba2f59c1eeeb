"""`servecat api`: serve the catalog (newest snapshot under the store root) over HTTP."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--store", default=".servecat/store", show_default=True,
              help="Store root holding catalog/ snapshots and benchmark requests: a folder or "
                   "s3://bucket/prefix (endpoint from SERVECAT_S3_ENDPOINT_URL or "
                   "AWS_ENDPOINT_URL).")
@click.option("--configs", type=click.Path(path_type=Path), default=Path("configs"),
              show_default=True, help="Folder with profiles.yaml and hardware.yaml.")
@click.option("--poll", type=float, default=1.0, show_default=True,
              help="Seconds between checks for a newer snapshot.")
@click.option("--log-level", default="warning", show_default=True)
def api(host: str, port: int, store: str, configs: Path, poll: float, log_level: str) -> None:
    """Catalog query API (OpenAPI docs at /docs, HTML page at /)."""
    import uvicorn

    from catalog.api import create_app

    app = create_app(store, configs_dir=configs, poll_s=poll)
    click.echo(f"servecat api: http://{host}:{port}/ (store {store})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                loop="uvloop", http="httptools")
