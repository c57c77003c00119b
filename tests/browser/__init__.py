"""Browser tests (`-m browser`): the cockpit through Debian's chromium and Playwright."""
