"""The tests' shared support code: engine helpers (sample photos, paths, fresh environments), the fake Bot API server,
the bot helpers built on it, the PostgreSQL test server, the local-store child process, the store comparison and the
composed event photos (which the benchmarks import too). Imported as `support.<module>` (pytest puts tests/ on
sys.path; see [tool.pytest.ini_options] in pyproject.toml)."""
