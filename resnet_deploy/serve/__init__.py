"""Serving: a real Triton server for resnet-deploy artifacts, and its client side.

``server`` starts the ``tritonserver`` binary that ``nvidia-pytriton`` bundles over a Python-backend
repository (``resnet_deploy.deploy.triton`` with ``backend="python"``) whose model
(``triton_model``) runs our runtime Session; ``env`` makes and finds the separate environment that
server's Python side needs; ``client`` talks KServe v2 to any Triton (``TritonSession``) and
``loadgen`` drives it with concurrent clients (``resnet-bench triton``).
"""
