"""Deployment targets: writers that turn a gated artifact into what a serving system loads.

Each target (a Triton model repository, DeepStream nvinfer configurations) lives in a module of
its own; all of them start from :func:`resnet_deploy.deploy.gated.gated_manifest`, so no target
ever deploys an artifact whose accuracy was never checked against PyTorch on real data.
"""
