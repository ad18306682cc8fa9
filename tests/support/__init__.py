"""What tests (and benchmarks) share to run against real servers on 127.0.0.1: free ports and
private Redis servers (``servers``), throwaway Postgres databases (``databases``), a
``redisched`` process on a free port (``api``)."""
