CREATE TABLE IF NOT EXISTS "user" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "age" REAL NOT NULL,
    "created_at" BIGINT NOT NULL,
    "updated_at" BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS "user_email_key" ON "user" ("email");

CREATE TABLE IF NOT EXISTS "pet" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "name" TEXT NOT NULL,
    "species" TEXT NOT NULL,
    "created_at" BIGINT NOT NULL,
    "updated_at" BIGINT NOT NULL,
    "owner" BIGINT
);
CREATE INDEX IF NOT EXISTS "pet_owner_idx" ON "pet" ("owner");

CREATE TABLE IF NOT EXISTS "tag" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "label" TEXT NOT NULL,
    "created_at" BIGINT NOT NULL,
    "updated_at" BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS "tag_label_key" ON "tag" ("label");

CREATE TABLE IF NOT EXISTS "pet_tags__tag_pets" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "pet_tags" BIGINT NOT NULL,
    "tag_pets" BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS "pet_tags__tag_pets_pair_key" ON "pet_tags__tag_pets" ("pet_tags", "tag_pets");
CREATE INDEX IF NOT EXISTS "pet_tags__tag_pets_tag_pets_idx" ON "pet_tags__tag_pets" ("tag_pets");

