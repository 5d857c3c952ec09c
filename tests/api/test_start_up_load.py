"""The server's start-up load: one deployment whose file can no longer be served fails
alone, saying why; the server starts and the others load."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import in_process, sqlite_settings


async def test_a_file_no_longer_allowed_fails_its_deployment_and_the_server_starts(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "custom.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    # Registered while the operator allowed the directory (the engine off: nothing loads yet).
    async with in_process(sqlite_settings(tmp_path, model_dirs=[str(models)])) as (_app, client):
        created = await client.post(
            "/v4/models",
            json={"name": "custom", "model_type": "CHAT_COMPLETION", "model_vendor": "LLMENGINE"},
        )
        assert created.status_code == 200, created.text
        deployment = await client.post(
            f"/v4/models/{created.json()['id']}/deployments",
            json={"name": "custom", "vendor_configuration": {"checkpoint_path": str(models / "custom.gguf")}},
        )
        assert deployment.status_code == 200, deployment.text
        deployment_id = deployment.json()["id"]
    # The operator no longer allows it; the server starts with the embedded engine on.
    async with in_process(sqlite_settings(tmp_path, embedded_engine=True)) as (_app, client):
        listed = (await client.get("/v4/model-deployments")).json()["items"]
        by_id = {item["id"]: item for item in listed}
        assert by_id[deployment_id]["status"] == "FAILED"
        assert "MODELPORT_MODEL_DIRS" in by_id[deployment_id]["deployment_metadata"]["status_reason"]
        others = [item for item in listed if item["id"] != deployment_id and item["name"].endswith("-embedded")]
        assert others and all(item["status"] == "READY" for item in others)
