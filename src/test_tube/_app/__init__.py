"""The programs over the read side: the ``test-tube`` command line and its web page."""
