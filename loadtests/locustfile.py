"""Stampede's stock locustfile: the CRM journeys of the seed plan.

Run it through Stampede (``stampede run --scenario normal ...``), which loads it
together with the Stampede plugin::

    locust -f plugins/stampede/load/entry.py,loadtests/locustfile.py --headless \
        --host http://staging.example/v1 --stampede-plan '<json>' AgentUser BrokerUser ...

The journey weights, think time, accounts and run tag come from the plan; the
password from the environment variable the plan names.
"""

from stampede.loadtests.journeys import AdminUser, AgentUser, BrokerUser, ReadonlyUser

__all__ = ["AdminUser", "AgentUser", "BrokerUser", "ReadonlyUser"]
