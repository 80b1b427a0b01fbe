use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "send_rules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub from_group: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub to_group: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
