"""The pytest plugin of trader-sdk: fixtures every plugin test suite can use."""
