def pytest_addoption(parser):
    parser.addoption("--data-dir", default=None, help="folder holding MNIST/raw/ (optional)")
