"""fetalgan: generative models of fetal ultrasound images on HPC clusters."""


def __getattr__(name: str):
    # The version is written once, in pyproject.toml; read from the installed metadata on first
    # use, so `import fetalgan` stays free of importlib.metadata's scan.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("fetalgan")
        except PackageNotFoundError:  # a source tree on sys.path, never installed
            return "0+unknown"
    raise AttributeError(f"module 'fetalgan' has no attribute {name!r}")
