"""`modelport accounts/keys/spend` on a SQLite file: limits from the command line, and
accounts and keys named by name, id or unique id prefix."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from modelport.cli.main import app
from modelport.store import db
from modelport.store.tables import ApiKey


def _key(database_url: str, key_id: str) -> ApiKey:
    async def read() -> ApiKey:
        engine = db.make_engine(database_url)
        try:
            async with db.make_sessions(engine)() as session:
                key = await session.get(ApiKey, key_id)
                assert key is not None
                return key
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_keys_take_limits_from_the_command_line(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    env = {"MODELPORT_DATABASE_URL": database_url}
    account = runner.invoke(app, ["accounts", "create", "team"], env=env)
    assert account.exit_code == 0, account.output
    account_id = account.stdout.strip()

    created = runner.invoke(
        app,
        ["keys", "create", "--account", account_id, "--rpm-limit", "60", "--max-budget", "200",
         "--budget-duration", "30d"],
        env=env,
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    key_id = created.stderr.split()[2]
    key = _key(database_url, key_id)
    assert (key.rpm_limit, key.max_budget, key.budget_duration, key.tpm_limit) == (60, 200.0, "30d", None)

    updated = runner.invoke(
        app, ["keys", "update", key_id, "--max-budget", "5", "--tpm-limit", "1000", "--clear", "rpm_limit"], env=env
    )
    assert updated.exit_code == 0, updated.output
    key = _key(database_url, key_id)
    assert (key.rpm_limit, key.max_budget, key.tpm_limit, key.budget_duration) == (None, 5.0, 1000, "30d")

    refused = runner.invoke(app, ["keys", "update", key_id, "--budget-duration", "soon"], env=env)
    assert refused.exit_code == 1 and "--budget-duration" in refused.stderr
    negative = runner.invoke(app, ["keys", "update", key_id, "--rpm-limit", "-1"], env=env)
    assert negative.exit_code == 1 and "--rpm-limit" in negative.stderr
    missing = runner.invoke(app, ["keys", "update", "no-such-key", "--rpm-limit", "1"], env=env)
    assert missing.exit_code == 1 and "no key" in missing.stderr

    spend = runner.invoke(app, ["spend", "--account", account_id], env=env)
    assert spend.exit_code == 0 and f"account {account_id}: $0.000000" in spend.stdout


def test_accounts_and_keys_are_named_by_name_or_prefix_and_an_unknown_one_is_an_error(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"MODELPORT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    account_id = runner.invoke(app, ["accounts", "create", "team-b"], env=env).stdout.strip()
    again = runner.invoke(app, ["accounts", "create", "team-b"], env=env)
    assert again.exit_code == 1 and "already exists" in again.stderr  # one name, one account

    created = runner.invoke(app, ["keys", "create", "--account", "team-b", "--name", "ci"], env=env)
    assert created.exit_code == 0, created.output
    key_id = created.stderr.split()[2]
    by_name = runner.invoke(app, ["keys", "update", "ci", "--rpm-limit", "7"], env=env)
    assert by_name.exit_code == 0, by_name.output
    by_prefix = runner.invoke(app, ["keys", "update", key_id[:8], "--tpm-limit", "70"], env=env)
    assert by_prefix.exit_code == 0, by_prefix.output
    key = _key(env["MODELPORT_DATABASE_URL"], key_id)
    assert (key.rpm_limit, key.tpm_limit) == (7, 70)

    for reference in ("team-b", account_id[:8]):
        spend = runner.invoke(app, ["spend", "--account", reference], env=env)
        assert spend.exit_code == 0 and f"account {account_id}: $0.000000" in spend.stdout, spend.output
    unknown = runner.invoke(app, ["spend", "--account", "default"], env=env)  # no such account here
    assert unknown.exit_code == 1 and "no account named 'default'" in unknown.output


def test_the_version_is_printed() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.stdout.strip()) == (0, f"modelport {version('modelport')}")


def test_keys_take_the_response_cache_setting_next_to_the_limits(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    env = {"MODELPORT_DATABASE_URL": database_url}
    account_id = runner.invoke(app, ["accounts", "create", "team"], env=env).stdout.strip()
    created = runner.invoke(app, ["keys", "create", "--account", account_id, "--cache-ttl-seconds", "600"], env=env)
    assert created.exit_code == 0, created.output
    key_id = created.stderr.split()[2]
    assert _key(database_url, key_id).cache_ttl_seconds == 600

    longer = runner.invoke(app, ["keys", "update", key_id, "--cache-ttl-seconds", "86400"], env=env)
    assert longer.exit_code == 0, longer.output
    assert _key(database_url, key_id).cache_ttl_seconds == 86400
    too_long = runner.invoke(app, ["keys", "update", key_id, "--cache-ttl-seconds", str(30 * 86400 + 1)], env=env)
    assert too_long.exit_code == 1 and "--cache-ttl-seconds" in too_long.stderr
    cleared = runner.invoke(app, ["keys", "update", key_id, "--clear", "cache_ttl_seconds"], env=env)
    assert cleared.exit_code == 0, cleared.output
    assert _key(database_url, key_id).cache_ttl_seconds is None
