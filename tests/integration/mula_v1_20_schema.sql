-- mula v1.20.1's database as its alembic migrations 0001..0010 leave it
-- (mula/scheduler/storage/migrations/versions/ in minvws/nl-kat-coordination, tag v1.20.1),
-- written out by hand for the import test: columns in the order the migrations add them,
-- the leftovers of older revisions (items, p_item) dropped as 0008 drops them.

-- 0001, plus 0007's CANCELLED. SQLAlchemy's Enum(TaskStatus) stores the members' names.
CREATE TYPE taskstatus AS ENUM ('PENDING', 'QUEUED', 'DISPATCHED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED');

CREATE TABLE alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- 0008, plus 0009's organisation.
CREATE TABLE schedules (
    id           uuid                     NOT NULL,
    scheduler_id varchar                  NOT NULL,
    hash         varchar(32),
    data         jsonb                    NOT NULL,
    enabled      boolean                  NOT NULL,
    schedule     varchar,
    deadline_at  timestamp with time zone,
    created_at   timestamp with time zone NOT NULL DEFAULT now(),
    modified_at  timestamp with time zone NOT NULL DEFAULT now(),
    organisation varchar                  NOT NULL,
    CONSTRAINT schedules_pkey PRIMARY KEY (id),
    CONSTRAINT schedules_hash_key UNIQUE (hash)
);

-- 0001, 0003 (type), 0004 (server defaults), 0008 (schedule_id, hash, priority, data; p_item
-- dropped; scheduler_id and type NOT NULL), 0009 (organisation).
CREATE TABLE tasks (
    id           uuid                     NOT NULL,
    scheduler_id varchar                  NOT NULL,
    status       taskstatus               NOT NULL,
    created_at   timestamp with time zone NOT NULL DEFAULT now(),
    modified_at  timestamp with time zone NOT NULL DEFAULT now(),
    type         varchar                  NOT NULL,
    schedule_id  uuid,
    hash         varchar(32),
    priority     integer,
    data         jsonb                    NOT NULL,
    organisation varchar                  NOT NULL,
    CONSTRAINT tasks_pkey PRIMARY KEY (id),
    CONSTRAINT tasks_schedule_id_fkey FOREIGN KEY (schedule_id) REFERENCES schedules (id) ON DELETE SET NULL
);

CREATE INDEX ix_tasks_hash ON tasks (hash);                                           -- 0008
CREATE INDEX ix_tasks_status_queued ON tasks (scheduler_id, status) WHERE status = 'QUEUED'; -- 0010

INSERT INTO alembic_version (version_num) VALUES ('0010');
