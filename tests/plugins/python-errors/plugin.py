"""Test fixture: a Python preprocessor that fails in the way `?fail=` names.

bad / unprocessable / internal: the SDK's three refusals; value: an uncaught ValueError;
short: an input tensor whose data is shorter than its shape says (built past the SDK's
checks, as a buggy plugin could); anything else: a valid f32 input `x`, [1, 1].
"""
from infergate_sdk import BadRequest, Internal, Prepared, Request, Tensor, Unprocessable, log


def preprocess(req: Request) -> Prepared:
    fail = req.query_param("fail")
    log.info(f"python-errors: fail={fail}")
    if fail == "bad":
        raise BadRequest("bad: send something else")
    if fail == "unprocessable":
        raise Unprocessable("unprocessable: not for this model")
    if fail == "internal":
        raise Internal("internal: broken invariant")
    if fail == "value":
        raise ValueError("boom")
    x = Tensor.f32([[1.0]])
    if fail == "short":
        x.data = x.data[:2]
    return Prepared({"x": x})
